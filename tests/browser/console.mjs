// The Sandogh console in Debian's Chromium, driven by playwright-core (it
// downloads no browser). Run by tests/tests/console_browser.rs, which
// starts the controller and the simulated fleet and passes everything in
// the CONSOLE environment variable (JSON). Each step prints "OK <step>";
// a failure prints the step and the error and exits 1. "BENCH_OPEN" asks
// the Rust side to enrol the shipment's devices; "BYTES <what> <n>" are
// the bytes Chromium received (headers and bodies, from the DevTools
// protocol's encodedDataLength).
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const cfg = JSON.parse(process.env.CONSOLE);
const base = cfg.url;
const screens = cfg.screens;
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

function fail(step, err) {
  console.log(`FAILED ${step}: ${err && err.stack ? err.stack : err}`);
  browser.close().finally(() => process.exit(1));
}

async function step(name, fn) {
  try {
    await fn();
    console.log(`OK ${name}`);
  } catch (e) {
    fail(name, e);
    await new Promise(() => {});
  }
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

// The controller's certificate is issued by the fleet's own CA, which this
// throwaway browser profile does not hold.
async function context(opts = {}) {
  return browser.newContext({
    ignoreHTTPSErrors: true,
    viewport: { width: 1366, height: 768 },
    ...opts,
  });
}

async function signIn(ctx, token, lang) {
  const page = await ctx.newPage();
  await page.goto(`${base}/ui/login${lang ? `?lang=${lang}` : ""}`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(/\/ui\/$/), page.click("form[action='/ui/login'] button")]);
  return page;
}

async function setLang(page, lang) {
  const current = await page.getAttribute("html", "lang");
  if (current !== lang) {
    await Promise.all([page.waitForLoadState("load"), page.click("form[action='/ui/lang'] button")]);
    await page.waitForFunction((l) => document.documentElement.lang === l, lang);
  }
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(screens, `${name}.png`), fullPage: true });
}

/// Bytes received by a page, counted over the DevTools protocol.
async function counter(ctx, page) {
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Network.enable");
  const urls = new Map();
  const bytes = new Map();
  cdp.on("Network.requestWillBeSent", (e) => urls.set(e.requestId, e.request.url));
  cdp.on("Network.loadingFinished", (e) => bytes.set(e.requestId, e.encodedDataLength));
  return {
    total: () => [...bytes.values()].reduce((a, b) => a + b, 0),
    of: (re) => [...bytes.entries()].filter(([id]) => re.test(urls.get(id) || "")).map(([, n]) => n),
    // Only the byte counts: a request in flight at the reset keeps its URL.
    reset: () => { bytes.clear(); },
  };
}

// --- a first visit, empty cache, in each language; and one update -------
for (const lang of ["en", "fa"]) {
  await step(`first-visit-${lang}`, async () => {
    const ctx = await context();
    const page = await ctx.newPage();
    const count = await counter(ctx, page);
    await page.goto(`${base}/ui/login?lang=${lang}`);
    await page.fill("#token", cfg.tech);
    await Promise.all([page.waitForURL(/\/ui\/$/), page.click("form[action='/ui/login'] button")]);
    await setLang(page, lang);
    await page.waitForLoadState("networkidle");
    // Every font the page uses is in before counting.
    const fonts = await page.evaluate(async () => {
      await document.fonts.ready;
      return [...document.fonts].filter((f) => f.status === "loaded").map((f) => f.weight);
    });
    await page.waitForLoadState("networkidle");
    console.log(`FONTS ${lang} ${fonts.join(",") || "none"}`);
    console.log(`BYTES first-visit-${lang} ${count.total()}`);
    if (lang === "en") {
      count.reset();
      // Until a live update has finished loading (its size is known then).
      const until = Date.now() + 30000;
      while (count.of(/\/ui\/live\//).length === 0 && Date.now() < until) {
        await page.waitForTimeout(200);
      }
      const updates = count.of(/\/ui\/live\//);
      check(updates.length > 0, "no live update seen");
      console.log(`BYTES update ${Math.max(...updates)}`);
    }
    await ctx.close();
  });
}

// --- a province technician sees only their province ---------------------
let techPage;
await step("tech-scope", async () => {
  const ctx = await context();
  techPage = await signIn(ctx, cfg.tech);
  await setLang(techPage, "en");
  const page = techPage;
  const rows = await page.$$eval("main table tbody tr th[scope=row]", (ths) => ths.map((t) => t.textContent.trim()));
  check(rows.length === 1 && rows[0] === "Mazandaran", `rows: ${rows}`);
  const text = await page.textContent("body");
  for (const other of ["Tehran", "IR-23", "تهران"]) check(!text.includes(other), `shows ${other}`);
  const links = await page.$$eval("a[href^='/ui/p/']", (as) => as.map((a) => a.getAttribute("href")));
  check(links.every((h) => h === "/ui/p/IR-02"), `links: ${links}`);
  const total = await page.textContent("[data-k='all:t']");
  check(total.trim() === "12", `the technician's total is ${total}`);
  // Another province by its address: refused.
  const resp = await page.goto(`${base}/ui/p/IR-23`);
  check(resp.status() === 403, `IR-23 answered ${resp.status()}`);
  await page.goto(`${base}/ui/`);
  await shot(page, "national-tech-en");
});

// --- drill down to a device and run its checks --------------------------
await step("drill-down-run-checks", async () => {
  const page = techPage;
  await Promise.all([page.waitForURL(/\/ui\/p\/IR-02$/), page.click("tbody th a[href='/ui/p/IR-02']")]);
  await Promise.all([page.waitForURL(/\/ui\/c\//), page.click(`tbody th a[href='/ui/c/${cfg.county}']`)]);
  await Promise.all([
    page.waitForURL(/\/ui\/devices\?/),
    page.click(`tbody th a[href*='station=${cfg.station}']`),
  ]);
  await Promise.all([
    page.waitForURL(new RegExp(`/ui/devices/${cfg.device}$`)),
    page.click(`tbody th a[href='/ui/devices/${cfg.device}']`),
  ]);
  await Promise.all([
    page.waitForLoadState("load"),
    page.click("form:has(input[value='run-checks']) button"),
  ]);
  check((await page.textContent("h1")).includes("Run checks"), "a confirmation first");
  await Promise.all([page.waitForURL(/done=run-checks/), page.click("form:has(input[name=confirm]) button[type=submit]")]);
  await shot(page, "device-after-run-checks-en");
  // The device answers through its outbox; the page shows the result.
  let state = "";
  for (let i = 0; i < 90 && state !== "ok"; i++) {
    await page.waitForTimeout(1000);
    await page.reload();
    state = await page.$eval("td[data-state]", (td) => td.getAttribute("data-state")).catch(() => "");
  }
  check(state === "ok", `the command is ${state}`);
});

// --- Persian: right to left, Jalali dates ------------------------------
await step("persian-date", async () => {
  const page = techPage;
  await page.goto(`${base}/ui/rollouts`);
  await setLang(page, "fa");
  check((await page.getAttribute("html", "dir")) === "rtl", "right to left");
  const text = await page.textContent("section[aria-labelledby='h-freeze']");
  check(text.includes("۱۴۰۴/۰۱/۰۱"), `2025-03-21 as ۱۴۰۴/۰۱/۰۱ in: ${text}`);
  check(!text.includes("2025-03-21"), "no Gregorian date in Persian");
  await shot(page, "rollouts-tech-fa");
  await setLang(page, "en");
});

// --- central operations: start, pause, resume a rollout -----------------
let central;
await step("rollout-start-pause-resume", async () => {
  const ctx = await context();
  central = await signIn(ctx, cfg.central);
  await setLang(central, "en");
  const page = central;
  const phase = async () => (await page.textContent("[data-k='ro:ph']")).trim();
  await page.goto(`${base}/ui/rollouts/${cfg.rollout}`);
  check((await phase()) === "draft", `phase ${await phase()}`);
  await page.click("form:has(input[value='start']) button");
  await Promise.all([page.waitForURL(/done=start/), page.click("form:has(input[name=confirm]) button[type=submit]")]);
  check((await phase()) === "running", `after start: ${await phase()}`);
  await Promise.all([page.waitForURL(/done=pause/), page.click("form:has(input[value='pause']) button")]);
  check((await phase()) === "paused", `after pause: ${await phase()}`);
  await shot(page, "rollout-paused-en");
  await Promise.all([page.waitForURL(/done=resume/), page.click("form:has(input[value='resume']) button")]);
  check((await phase()) === "running", `after resume: ${await phase()}`);
});

// --- the warehouse bench, live while devices enrol ----------------------
await step("bench-enrolled", async () => {
  const ctx = await context();
  const page = await signIn(ctx, cfg.warehouse);
  await setLang(page, "en");
  await page.goto(`${base}/ui/bench/${cfg.shipment}`);
  const states = async () => page.$$eval("td[data-k$=':l']", (tds) => tds.map((t) => t.textContent.trim()));
  const before = await states();
  check(before.length === cfg.shipment_devices.length && before.every((s) => s === "registered"), `before: ${before}`);
  await shot(page, "bench-before-en");
  console.log("BENCH_OPEN");
  // No reload: the page's numbers follow by themselves.
  await page.waitForFunction(
    (n) => {
      const tds = [...document.querySelectorAll("td[data-k$=':l']")];
      return tds.length === n && tds.every((t) => t.textContent.trim() === "enrolled");
    },
    cfg.shipment_devices.length,
    { timeout: 90000 },
  );
  const enrolled = await page.textContent("[data-k='sh:e']");
  check(enrolled.trim() === String(cfg.shipment_devices.length), `enrolled count ${enrolled}`);
  await shot(page, "bench-after-en");
  await ctx.close();
});

// --- the readiness report, printed to PDF -------------------------------
await step("report-pdf", async () => {
  const page = central;
  for (const lang of ["en", "fa"]) {
    await page.goto(`${base}/ui/report?lang=${lang}`);
    await page.emulateMedia({ media: "print" });
    await page.pdf({ path: path.join(screens, `report-${lang}.pdf`), format: "A4", printBackground: true });
    await page.emulateMedia({ media: "screen" });
    const resp = await page.request.get(`${base}/ui/report.pdf?lang=${lang}`);
    check(resp.status() === 200, `report.pdf ${resp.status()}`);
    check(resp.headers()["content-type"] === "application/pdf", "a PDF");
    const body = await resp.body();
    check(body.subarray(0, 5).toString() === "%PDF-", "PDF magic");
    fs.writeFileSync(path.join(screens, `report-controller-${lang}.pdf`), body);
  }
});

// --- a screenshot of every page in both languages -----------------------
await step("screenshots", async () => {
  const page = central;
  const pages = [
    ["national", "/ui/"],
    ["province", "/ui/p/IR-02"],
    ["county", `/ui/c/${cfg.county}`],
    ["devices", "/ui/devices?province=IR-02"],
    ["device", `/ui/devices/${cfg.device}`],
    ["rollouts", "/ui/rollouts"],
    ["rollout", `/ui/rollouts/${cfg.rollout}`],
    ["bench", "/ui/bench"],
    ["shipment", `/ui/bench/${cfg.shipment}`],
    ["audit", "/ui/audit"],
    ["report", "/ui/report"],
  ];
  for (const lang of ["en", "fa"]) {
    await page.goto(`${base}/ui/`);
    await setLang(page, lang);
    for (const [name, url] of pages) {
      const resp = await page.goto(`${base}${url}`);
      check(resp.status() === 200, `${url}: ${resp.status()}`);
      check((await page.getAttribute("html", "lang")) === lang, `${url} in ${lang}`);
      await shot(page, `${name}-${lang}`);
    }
    const ctx = await context();
    const login = await ctx.newPage();
    await login.goto(`${base}/ui/login?lang=${lang}`);
    await shot(login, `login-${lang}`);
    await ctx.close();
  }
  // The wall screen.
  await page.setViewportSize({ width: 1920, height: 1080 });
  await page.goto(`${base}/ui/`);
  await shot(page, "national-wall-fa");
  await setLang(page, "en");
});

await browser.close();
