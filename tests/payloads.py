"""Objects whose unpickling runs code: planted in files to check that loading never runs it.

Each creates a marker (a file or a folder) when unpickled; a test plants one, loads the file
through skretrieval, and checks that the marker is absent.
"""

import os


class CreatesFile:
    """Unpickling it calls ``open(marker, "w")``: code run from the file creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class CreatesFolder:
    """Unpickling it calls ``os.mkdir(marker)``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class RunsShell:
    """Unpickling it runs ``touch marker`` in a shell (``os.system``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
