"""The node and initializer container the gate-table graph is written into (:class:`Graph`),
including where the gate tables go: embedded, or as ONNX external data in :data:`TABLES_FILE`.
"""

from __future__ import annotations

import numpy as np

# The gate tables as ONNX external data (build_fast_parts): one file that the float32 and int8
# graphs of a version both reference, instead of a copy embedded in each (2 x 173 MB at seed size).
TABLES_FILE = "gate_tables.bin"


class Graph:
    """Nodes and initializers of one ONNX graph.  A ``Loop`` body has the enclosing graph as
    ``outer``: its constants live there (outer-scope references), its :meth:`local` ones in it."""

    def __init__(self, prefix: str = "", outer: Graph | None = None, tables: str = "embedded"):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.prefix = prefix
        self.window = False  # the graph declares the optional window input
        self.dense = False   # ... and the optional dense input
        self._count = 0
        self._consts: dict = {}
        self._locals: dict = {}
        self.outer = outer
        self.table_mode = tables    # where the gate tables go (see :meth:`table`)
        self.tables: list[np.ndarray] = []  # "external": their values, in file order
        self.table_bytes = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value, hint: str = "c", dtype=None) -> str:
        if self.outer is not None:
            return self.outer.const(value, hint, dtype)
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 8 else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(arr, name))
        if key is not None:
            self._consts[key] = name
        return name

    def table(self, value: np.ndarray | None, shape: tuple[int, int], hint: str) -> str:
        """A gate table: an initializer like :meth:`const`'s (mode ``embedded``), or one whose data
        is at the next offset of TABLES_FILE - ``external``: ``value`` is kept for the file,
        ``given``: the file exists already (``value`` None).  The tables come in the same order at
        every precision, so a model's float32 and int8 graphs reference the same bytes."""
        if self.table_mode == "embedded":
            return self.const(value, hint)
        from onnx import TensorProto

        name = self.name(hint)
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape, data_location=TensorProto.EXTERNAL)
        nbytes = int(np.prod(shape)) * 4
        for key, val in {"location": TABLES_FILE, "offset": self.table_bytes, "length": nbytes}.items():
            tensor.external_data.add(key=key, value=str(val))
        self.initializers.append(tensor)
        self.table_bytes += nbytes
        if value is not None:
            self.tables.append(np.ascontiguousarray(value, np.float32))
        return name

    def local(self, value: np.ndarray, hint: str) -> str:
        """An initializer of this graph itself (not shared through ``const`` with an outer graph),
        made once per array object: for weights ONNX Runtime should pre-pack (see :class:`_Weight`)."""
        key = id(value)
        if key not in self._locals:
            name = self.name(hint)
            self.initializers.append(self.numpy_helper.from_array(value, name))
            self._locals[key] = (value, name)  # the array is kept, so its id is not reused
        return self._locals[key][1]

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int | list[str] = 1,
           **attrs):
        names = outputs if isinstance(outputs, list) else [self.name(hint or op_type.lower())
                                                            for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, inputs, names, **attrs))
        return names[0] if len(names) == 1 else names
