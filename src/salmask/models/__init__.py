"""salmask.models"""
