"""Serving: the champion behind Ray Serve on HTTP, and batch scoring on Ray Data.

app.py      the Serve deployment: FastAPI routes, validation, batching, explanations, the prediction log
openapi.py  the OpenAPI document built from the contract and the validation policies
record_schema.py  one record as a JSON Schema object (what the server rejects is a constraint)
docs.py     ``/docs``: Swagger UI from local assets (no CDN)
page.py     ``/``: a self-contained page to try the model, generated from the contract
deploy.py   deploy, pin the alias, zero-downtime reload, ``serve deploy`` config
ingress.py  how HTTP reaches the replicas (HAProxy by default: loopback, retries a dead replica's requests)
predlog.py  the prediction log: spooled before the answer (survives a SIGKILL), Parquet off the request path
batch.py    ``raypipe predict``: Parquet in, scored Parquet out, on an actor pool
"""
