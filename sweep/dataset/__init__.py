"""The results dataset: where a run's files are, how rows become them, what they hold.

- ``RunDir``: the run directory's layout, the one place that names its parts
  (``NotARun``: a path that is no run);
- ``ResultWriter``, ``encode``: Parquet files encoded where rows are made, then
  written under ``.staging/``, fsynced and atomically renamed in;
- ``ROW_SCHEMA``, ``FILE_SCHEMA``, ``rows_table``, ``scenario_columns`` (and back,
  ``scenario_from_columns``): the columns;
- ``check_dataset``, ``quarantine``: read every file (page checksums too), move bad ones aside;
- ``failed_rows``, ``supersede``, ``finish_superseding``: a retry's error rows moved to
  ``superseded/``, the other rows of their files kept;
- ``Provenance``, ``read_manifest``, ``write_manifest``: ``manifest.json`` and file metadata;
- ``open_dataset``: the results as a pyarrow dataset.

Names are imported on first use (a worker building rows needs the schema only).
"""

from sweep.faces import lazy_face

_EXPORTS = {
    "RunDir": "layout",
    "NotARun": "layout",
    "PARTITION_COLUMNS": "layout",
    "ResultWriter": "writer",
    "EncodedFile": "writer",
    "encode": "writer",
    "file_metadata": "writer",
    "FILE_SCHEMA": "schema",
    "FLOAT_FIELDS": "schema",
    "ROW_SCHEMA": "schema",
    "rows_table": "schema",
    "scenario_columns": "schema",
    "scenario_from_columns": "schema",
    "BadFile": "integrity",
    "Scan": "integrity",
    "cell_keys": "integrity",
    "check_dataset": "integrity",
    "check_file": "integrity",
    "quarantine": "integrity",
    "Superseded": "superseding",
    "failed_rows": "superseding",
    "finish_superseding": "superseding",
    "supersede": "superseding",
    "Provenance": "manifest",
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "open_dataset": "reading",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)
