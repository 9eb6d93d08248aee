// express-session + connect-redis (node-redis), the same three routes as the Rust servers.
// One process per core (cluster), as Node apps are deployed. With NO_SESSIONS=1 it is
// Express's own upper bound: the same handlers over a fresh plain object, no Redis.
const cluster = require("node:cluster");
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  const express = require("express");
  const session = require("express-session");
  const RedisStore = require("connect-redis").default;
  const { createClient } = require("redis");

  const bare = process.env.NO_SESSIONS === "1";
  const client = bare ? null : createClient({ url: process.env.REDIS_URL });
  const ready = bare ? Promise.resolve() : client.connect();
  if (client) client.on("error", () => {});
  ready.then(() => {
    const app = express();
    if (bare) {
      app.use((req, res, next) => {
        req.session = { user: "alice", login_time: 1763000000000, regenerate: (cb) => cb() };
        next();
      });
    } else {
      app.use(
        session({
          store: new RedisStore({ client }),
          secret: "bench-secret-bench-secret-bench-secret-0001",
          resave: false,
          saveUninitialized: false,
          cookie: { secure: false, maxAge: 24 * 3600 * 1000 },
        })
      );
    }
    app.post("/api/login", (req, res, next) => {
      req.session.regenerate((err) => {
        if (err) return next(err);
        req.session.user = req.query.user;
        req.session.login_time = Date.now();
        res.json({ user: req.query.user });
      });
    });
    app.get("/api/profile", (req, res) => {
      if (!req.session.user) return res.sendStatus(401);
      res.json({ user_id: req.session.user, login_time: req.session.login_time });
    });
    app.post("/api/visits", (req, res) => {
      req.session.visits = (req.session.visits || 0) + 1;
      res.json({ visits: req.session.visits });
    });
    app.get("/api/untouched", (req, res) => res.send("ok"));
    app.listen(Number(process.env.PORT || 3000), "127.0.0.1");
  });
}
