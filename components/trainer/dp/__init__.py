"""Differential privacy for the trainer, behind one door (docs/dp.md).

DP-SGD on the discriminator's real-data gradient, read in one place: ``spec`` (the ``trainer.dp*`` keys and their
rules), ``plan`` (sampling rate, normaliser, capacity, delta, step budget and the privacy record), ``sampling``
(the train split in memory and Poisson / patient sampling), ``per_example`` (per-example gradients, clipping,
noise), ``accounting`` (epsilon), ``discriminator_phase`` (the private D step the trainer injects into the ac-GAN)
and ``training`` (what a DP run changes in the training loop). An ordinary run imports none of it but ``spec``;
this file imports nothing, so loading a config stays free of TensorFlow.
"""
