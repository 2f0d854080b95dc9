"""Search: the :class:`Index` (flat or IVF), the one search path (:mod:`.scan`), IVF
lists and the compiled top-k. Imports the files, codecs and base modules."""
