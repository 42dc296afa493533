-- Runs once, when the PostgreSQL volume is first initialised (as POSTGRES_USER): the MLflow
-- tracking server gets a database of its own beside the auditor's findings database.
CREATE DATABASE mlflow;
