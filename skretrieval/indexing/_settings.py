"""Settings recorded by an index and its checkpoints, compared in words."""


def settings_differences(recorded, current):
    """The settings that differ, as ``"name: recorded -> current"`` phrases."""
    names = sorted(set(recorded) | set(current))
    return [
        f"{name}: {recorded.get(name, '(none)')} -> {current.get(name, '(none)')}"
        for name in names
        if recorded.get(name) != current.get(name)
    ]
