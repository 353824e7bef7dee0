"""The ops service (`rof ops serve`): /metrics, /health, /health/live, /health/ready (ops/app.py).

A service layer like cli.py: it may import adapters, core and Dagster's instance API; nothing in the
package imports it except cli.py and the tests.
"""
