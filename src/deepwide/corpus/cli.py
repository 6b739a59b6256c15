"""``python -m deepwide corpus ...``"""


def register(sub):
    p = sub.add_parser("corpus", help="synthesize corpora and write manifests")
    p.add_subparsers(dest="command", required=True, metavar="COMMAND")
