"""dockmagic: run notebook cells inside Docker containers, with GPUs, from IPython and Jupyter.

`%load_ext dockmagic` registers `%%docker`, `%docker` and `%gpus`. Loading touches neither the
Docker engine nor NVML: both are reached on first use.
"""
__version__ = "0.1.0"

_magics = None


def __getattr__(name):
    # `dockmagic.Panel()` without importing ipywidgets when the extension loads.
    if name == "Panel":
        from .panel import Panel
        return Panel
    raise AttributeError(f"module 'dockmagic' has no attribute {name!r}")


def load_ipython_extension(ipython):
    global _magics
    from .magics import DockerMagics

    _magics = DockerMagics(ipython)
    ipython.register_magics(_magics)


def unload_ipython_extension(ipython):
    global _magics
    if _magics is not None:
        closer = getattr(_magics, "close", None)
        if closer:
            closer()
        # IPython has no unregister; drop our entries so a reload starts clean.
        for kind in ("line", "cell"):
            table = ipython.magics_manager.magics[kind]
            for name in ("docker", "gpus"):
                table.pop(name, None)
    _magics = None
