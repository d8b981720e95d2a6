"""{{name}}: a small HTTP service, in Flask.

`GET /ping` answers `{}` once the service is ready; `GET /version` says which version
runs, under which `PYM_ENV`. In the image, gunicorn serves `app` on `$PORT` (8080).
"""

import os

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/ping")
def ping():
    return jsonify({})


@app.get("/version")
def version():
    return jsonify(
        {
            "name": "{{name}}",
            "version": os.environ.get("PYM_VERSION", "dev"),
            "pym_env": os.environ.get("PYM_ENV", "local"),
        }
    )
