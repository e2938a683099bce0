// Live order status on /orders, as a progressive enhancement (the page is right on reload
// without it): while an order shown is pending, ask /orders/status about the pending ones,
// update their badges, drop the Cancel button of an order that can no longer be cancelled,
// and announce each change in the page's aria-live region. Stops when none is pending.
"use strict";

(() => {
  const list = document.querySelector("[data-status-url]");
  if (!list) return;
  const url = list.dataset.statusUrl;
  const live = document.getElementById("order-status-live");
  const interval = 1000;
  const maxFailures = 5;
  const cancellable = new Set(["pending", "confirmed"]);
  let failures = 0;

  const pendingBadges = () =>
    Array.from(document.querySelectorAll('[data-order-id][data-status="pending"]'));

  const label = (status) => status.charAt(0).toUpperCase() + status.slice(1);

  function show(badge, status) {
    const id = badge.dataset.orderId;
    badge.dataset.status = status;
    badge.className = `status status-${status}`;
    badge.textContent = label(status);
    if (!cancellable.has(status)) {
      const form = document.querySelector(`form[data-cancel-for="${CSS.escape(id)}"]`);
      if (form) form.remove();
    }
    if (live) live.textContent = `Order ${id.slice(0, 8)} is ${status}.`;
  }

  async function poll() {
    const badges = pendingBadges();
    if (badges.length === 0) return;
    const ids = badges.map((badge) => badge.dataset.orderId);
    try {
      const answer = await fetch(`${url}?ids=${encodeURIComponent(ids.join(","))}`, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
      });
      if (answer.status === 401) return; // signed out meanwhile: a reload shows why
      if (!answer.ok) throw new Error(`status ${answer.status}`);
      const statuses = await answer.json();
      for (const badge of badges) {
        const status = statuses[badge.dataset.orderId];
        if (typeof status === "string" && status !== "pending") show(badge, status);
      }
      failures = 0;
    } catch {
      failures += 1;
      if (failures >= maxFailures) return; // give up; a reload still shows the truth
    }
    setTimeout(poll, interval * 2 ** failures);
  }

  setTimeout(poll, interval);
})();
