"""mixtune pipeline steps: one package per step, plus `common` for shared code."""
