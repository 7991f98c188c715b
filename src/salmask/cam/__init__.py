"""salmask.cam"""
