// A tiny server-side app that connects to keygate with the redirect + PKCE flow, using the
// SDK's helpers in Node: the example in docs/INTEGRATING.md ("Redirect + PKCE") is this file.
// The verifier and the key never reach the browser; the browser only carries `state` and the
// one-time `code`.

import { randomBytes } from "node:crypto";
import { createServer } from "node:http";

import OpenAI from "openai";

import { buildConnectURL, createPkcePair, exchangeCode } from "../../../web/sdk/keygate.js";

/**
 * Starts the app on 127.0.0.1:0 and resolves to {origin, close, last} where `last` holds the
 * latest exchange ({code, verifier, apiKey, baseURL, grantId}) for the tests to inspect.
 */
export async function startServerApp({ vault }) {
  const pending = new Map(); // state → PKCE verifier, for connections started from this app
  const last = {};
  let origin = "";

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, origin);
    try {
      if (url.pathname === "/") {
        return page(res, 200, "Server Notes", `<p>Notes, summarised by OpenAI on the server.</p><p><a href="/connect">Connect OpenAI</a></p>`);
      }

      if (url.pathname === "/connect") {
        // 1. A PKCE pair and a state per attempt; send the person to keygate.
        const { verifier, challenge } = await createPkcePair();
        const state = randomBytes(16).toString("hex");
        pending.set(state, verifier);
        const location = new URL(
          buildConnectURL({
            vault,
            redirectUri: `${origin}/callback`,
            state,
            codeChallenge: challenge,
            appName: "Server Notes",
            models: ["gpt-4o-mini"],
            plan: "starter",
          }),
        );
        // (Tests only: /connect?scopes=inference,files asks for those scopes, ?plan=NAME that plan.)
        const scopes = url.searchParams.get("scopes");
        if (scopes) location.searchParams.set("scopes", scopes);
        const plan = url.searchParams.get("plan");
        if (plan) location.searchParams.set("plan", plan);
        res.writeHead(302, { location: location.href });
        return res.end();
      }

      if (url.pathname === "/callback") {
        // 2. keygate sends the person back with ?code&state (or ?error=access_denied&state).
        const state = url.searchParams.get("state") || "";
        const verifier = pending.get(state);
        pending.delete(state);
        if (!verifier) return page(res, 400, "Unknown request", "<p>This answer doesn't match a connection started here.</p>");
        if (url.searchParams.get("error") === "access_denied") {
          return page(res, 200, "Not connected", "<p>You chose not to connect Server Notes.</p>");
        }
        // 3. Exchange the code, server to server, with the verifier only this app knows.
        const code = url.searchParams.get("code") || "";
        const { apiKey, baseURL, grantId } = await exchangeCode({
          vault,
          code,
          codeVerifier: verifier,
          redirectUri: `${origin}/callback`,
        });
        Object.assign(last, { code, verifier, apiKey, baseURL, grantId });
        // 4. Use it with the official SDK (keep apiKey on the server, e.g. in your database).
        const openai = new OpenAI({ apiKey, baseURL });
        const completion = await openai.chat.completions.create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: "Say hello" }],
        });
        const answer = completion.choices[0].message.content;
        return page(res, 200, "Connected", `<p>Connected. OpenAI says: <q id="answer">${escape(answer)}</q></p>`);
      }

      return page(res, 404, "Not found", "");
    } catch (err) {
      return page(res, 500, "Something went wrong", `<pre id="error">${escape(err?.message || err)}</pre>`);
    }
  });

  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    last,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

function page(res, status, title, body) {
  res.writeHead(status, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title></head><body><h1>${escape(title)}</h1>${body}</body></html>`);
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
