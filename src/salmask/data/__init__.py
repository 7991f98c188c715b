"""salmask.data"""
