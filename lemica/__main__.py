from lemica.cli import app

app()
