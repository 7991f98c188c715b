"""salmask.saliency"""
