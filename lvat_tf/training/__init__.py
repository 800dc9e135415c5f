"""Training: the SSL train_step, upstream's Adam schedule, callbacks, the run loop."""
