"""course_lib: the library behind the self-supervised video representation learning course."""
__version__ = "0.1.0"
