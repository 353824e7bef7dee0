import yaml

from rof_pipelines.defs.instance_config import INSTANCE_FILE, render_instance_yaml
from rof_pipelines.settings import DEFAULT_CONFIG_PATH, PROJECT_ROOT, load_settings


def test_committed_dagster_yaml_is_the_rendering_of_the_shipped_config():
    rendered = render_instance_yaml(load_settings(DEFAULT_CONFIG_PATH, environ={}))
    assert INSTANCE_FILE == PROJECT_ROOT / "deploy" / "dagster.yaml"
    assert INSTANCE_FILE.read_text() == rendered


def test_no_instance_file_at_the_repository_root():
    """`dagster dev` in the repository would find a root dagster.yaml and warn it "will not be used"."""
    assert not (PROJECT_ROOT / "dagster.yaml").exists()
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert 'COPY deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"' in dockerfile


def test_pool_limits_follow_the_config():
    settings = load_settings(
        DEFAULT_CONFIG_PATH,
        environ={},
        overrides={
            "system_setup": {
                "worker_pool": {"task_worker": {"max_workers": 2, "queue_size": 9, "task_timeout": "45s"}}
            }
        },
    )
    config = yaml.safe_load(render_instance_yaml(settings))
    limits = {
        item["value"]: item["limit"] for item in config["run_coordinator"]["config"]["tag_concurrency_limits"]
    }
    assert limits == {"task_worker": 2, "ab_optimizer": 12}
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == 14
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
