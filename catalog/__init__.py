"""The catalogue: what the spec fixes about the data, as data. It imports nothing of the project.

- `catalog.tables`: departments, tables, fields, record keys, roles, status fields (spec section 1)
- `catalog.states`: the pending-verification states: code, 名称, route, meaning (spec section 4)
- `catalog.codes`: value domains of coded fields and the answer codes HCJG (spec sections 1 and 5)
- `catalog.base`: the layouts of the base's own tables and the base as frames

Everything else reads layouts from here; nothing spells them again.
"""
from catalog.tables import (ACTIVE_STATUS, DEPARTMENT_NAMES, DEPARTMENTS, DEPT_TABLES, INCREMENTAL_FIELDS,
                            RETURN_TABLE, ROLE_NAMES, TABLES, Role, Table, table)

__all__ = ["ACTIVE_STATUS", "DEPARTMENT_NAMES", "DEPARTMENTS", "DEPT_TABLES", "INCREMENTAL_FIELDS", "RETURN_TABLE",
           "ROLE_NAMES", "TABLES", "Role", "Table", "table"]
