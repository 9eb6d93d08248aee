// A tutorial-style Express app: express-session with connect-redis, a login that stores the
// user, a counter, a logout. Started by cloakroom-testkit's `ForeignApp::express`.
import express from "express";
import session from "express-session";
import { RedisStore } from "connect-redis";
import { createClient } from "redis";

const client = createClient({ url: process.env.REDIS_URL });
await client.connect();

const app = express();
app.use(
  session({
    store: new RedisStore({ client }),
    // Comma-separated: the first signs, all verify.
    secret: process.env.SESSION_SECRET.split(","),
    resave: false,
    saveUninitialized: false,
    cookie: { maxAge: Number(process.env.MAX_AGE_MS || 86400000) },
  }),
);

app.post("/login", (req, res) => {
  req.session.userId = req.query.user;
  res.json({ user: req.session.userId });
});
app.get("/counter", (req, res) => {
  req.session.views = (req.session.views || 0) + 1;
  res.json({ views: req.session.views });
});
app.get("/me", (req, res) => {
  res.json({ user: req.session.userId ?? null, views: req.session.views ?? 0 });
});
app.post("/logout", (req, res) => {
  req.session.destroy(() => res.json({ ok: true }));
});

app.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening"));
