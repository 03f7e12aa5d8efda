-- Roles and databases for docker-compose (scripts/services.sh does the same on a bare machine).
CREATE ROLE catalog_owner LOGIN PASSWORD 'catalog_owner' NOSUPERUSER NOBYPASSRLS;
CREATE ROLE catalog_app LOGIN PASSWORD 'catalog_app' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
CREATE ROLE catalog_auth LOGIN PASSWORD 'catalog_auth' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
CREATE ROLE catalog_jobs LOGIN PASSWORD 'catalog_jobs' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
CREATE ROLE openfga LOGIN PASSWORD 'openfga';
CREATE DATABASE publishing OWNER catalog_owner;
CREATE DATABASE openfga OWNER openfga;
\connect publishing
REVOKE ALL ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO catalog_owner;
GRANT USAGE ON SCHEMA public TO catalog_app, catalog_auth, catalog_jobs;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
