from conftest import CURRENT, REFERENCE


def test_register_then_show(cli, registered):
    assert registered["status"] == "pass" and registered["results"]["version"] == "1"
    shown = cli.json("models", "show", "flights@latest".replace("@latest", ""))
    assert shown["results"]["manifest"]["training_data"]["rows"] == 40000
    assert REFERENCE.exists() and CURRENT.exists()
