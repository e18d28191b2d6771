// Verify a WA Blast webhook delivery (Standard Webhooks v1) with Node.js.
const crypto = require("node:crypto");

// secret: the value of the WebhookConfig's signing Secret key.
// headers: the request headers (Node lower-cases their names).
// rawBody: the raw request body as a Buffer, before any JSON parsing.
function verify(secret, headers, rawBody, nowSeconds = Math.floor(Date.now() / 1000)) {
  secret = secret.trim();
  const key = secret.startsWith("whsec_")
    ? Buffer.from(secret.slice("whsec_".length), "base64") // the base64 of the key
    : Buffer.from(secret, "utf8"); // a plain secret of 16 bytes or more is the key itself
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  if (!id || !/^[0-9]+$/.test(ts || "")) throw new Error("missing webhook-id or webhook-timestamp");
  if (Math.abs(nowSeconds - Number(ts)) > 5 * 60) throw new Error("webhook-timestamp is more than 5 minutes away: possible replay");
  const mac = crypto.createHmac("sha256", key).update(`${id}.${ts}.`).update(rawBody).digest("base64");
  const want = Buffer.from(`v1,${mac}`);
  // During a secret rotation the header holds one signature per secret.
  const ok = (headers["webhook-signature"] || "").split(" ").some((sig) => {
    const got = Buffer.from(sig);
    return got.length === want.length && crypto.timingSafeEqual(got, want);
  });
  if (!ok) throw new Error("no valid signature");
}

module.exports = { verify };
