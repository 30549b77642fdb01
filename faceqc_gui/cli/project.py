"""`faceqc project` (placeholder until its issue lands)."""


def register(sub) -> None:
    p = sub.add_parser("project", help="(not implemented yet)")
    p.set_defaults(func=lambda args: print("faceqc project: not implemented yet") or 1)
