"""Quantizers: the last stage of a codec, turning rows into bytes and back.

Each quantizer module holds one family; :mod:`vecpress.codecs.spec` maps spec names to
them.
"""
