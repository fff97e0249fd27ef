from kexp.cli import app

app(prog_name="kexp")
