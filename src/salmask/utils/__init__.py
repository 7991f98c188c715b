"""salmask.utils"""
