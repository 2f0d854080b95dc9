"""Files: the index file format (:mod:`.storage`, its block checks) and the readers of
vector files. Imports only the codecs and the base modules."""
