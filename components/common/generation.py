from components.evaluate.generation import *  # noqa  (temporary: the lead moves the real file here)
