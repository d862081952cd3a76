"""Evaluation: the eight PICR tasks (METHOD.md section 5) and the training progress signal."""
