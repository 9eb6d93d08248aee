"""A tutorial-style Flask app: Flask-Session on Redis, a login that stores the user, a
counter, a logout. Started by cloakroom-testkit's `ForeignApp::flask`."""
import os

import redis
from flask import Flask, jsonify, request, session
from flask_session import Session

app = Flask(__name__)
app.secret_key = os.environ["SECRET_KEY"]
app.config.update(
    SESSION_TYPE="redis",
    SESSION_REDIS=redis.from_url(os.environ["REDIS_URL"]),
    SESSION_USE_SIGNER=os.environ.get("SIGNER") == "1",
    SESSION_SERIALIZATION_FORMAT=os.environ.get("FORMAT", "msgpack"),
)
Session(app)


@app.post("/login")
def login():
    session["user_id"] = request.args["user"]
    return jsonify(user=session["user_id"])


@app.get("/counter")
def counter():
    session["views"] = session.get("views", 0) + 1
    return jsonify(views=session["views"])


@app.get("/me")
def me():
    return jsonify(user=session.get("user_id"), views=session.get("views", 0))


@app.post("/logout")
def logout():
    session.clear()
    return jsonify(ok=True)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]))
