"""nbval runs these notebooks in quick mode, also when pytest is pointed at this folder alone."""
import os

os.environ.setdefault("COURSE_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
