from lemica.cli.app import app

raise SystemExit(app())
