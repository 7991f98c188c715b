"""salmask.boundary"""
