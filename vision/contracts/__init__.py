"""The contracts between the parts (ARCHITECTURE.md §2, §3), as types.

- `vision.contracts.model`: `ModelMetadata`, the ``vision.*`` metadata of an exported
  ``model.onnx``, and `read_model_file`, the one reader of an ONNX file's contract.
- `vision.contracts.predictions`: the prediction table's Arrow schema, its typed row
  (`PredictionRow`) and the column builders that turn rows into a table.
- `vision.contracts.window`: the columns that place a window (``row_off`` .. ``maxy``), shared
  by the prediction table, the change table (also as ``*_before``) and the review exports.
"""
