"""Codecs: the :class:`Codec` (transforms, then one quantizer), the spec grammar, the
stages and training-row sampling. Imports only the base modules and :mod:`vecpress.kernels`."""
