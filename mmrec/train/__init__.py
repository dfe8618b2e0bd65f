"""Training on Accelerate: batches, checkpoints, the trainer loop."""
