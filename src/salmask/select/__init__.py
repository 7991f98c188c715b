"""salmask.select"""
