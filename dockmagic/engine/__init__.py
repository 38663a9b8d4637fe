"""The one Docker boundary (being built on main); `reaper` is its stdlib-only cleanup process."""
