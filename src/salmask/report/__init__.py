"""salmask.report"""
