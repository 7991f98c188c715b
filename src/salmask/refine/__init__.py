"""salmask.refine"""
