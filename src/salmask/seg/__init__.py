"""salmask.seg: segmentation networks trained on pseudo masks."""
