"""Dataset preparation: audio extraction, face boxes, synthetic corpus."""
