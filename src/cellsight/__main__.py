from cellsight.cli.main import app

app(prog_name="cellsight")
