"""Builds the worker's C fast path (`services/worker/_span_wire.c`).

Everything else about the package is in pyproject.toml. The extension is
optional: where it cannot be compiled the worker decodes with protobuf
alone (slower, same rows).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.worker._span_wire",
            ["services/worker/_span_wire.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        )
    ]
)
