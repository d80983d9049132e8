// flowwarden's graph renderer: runs Mermaid inside a sandboxed frame of its own.
// Mermaid styles what it draws with inline styles, which the pages' policy forbids; this
// frame (no data, no token, an opaque origin) may use them. It takes Mermaid text from
// the page that framed it and answers the SVG, or what is wrong with the text.
"use strict";

(() => {
  let ready = false;

  function setUp(fontFamily) {
    window.mermaid.initialize({
      startOnLoad: false,
      securityLevel: "strict",
      theme: "base",
      htmlLabels: false,
      fontFamily,
      flowchart: { htmlLabels: false, useMaxWidth: true, curve: "basis", padding: 12 },
      themeVariables: {
        fontFamily,
        fontSize: "14px",
        primaryColor: "#ffffff",
        primaryBorderColor: "#8a96a3",
        primaryTextColor: "#1d2733",
        lineColor: "#5b6876",
        edgeLabelBackground: "#f4f6f9",
      },
    });
    ready = true;
  }

  // The framing page may not use inline styles: its SVG comes without them, the rules of
  // its <style> elements as text, and each style attribute as the text of a numbered
  // data-style attribute's entry, for the page to apply through the CSSOM.
  function withoutInlineStyles(svg) {
    const root = new DOMParser().parseFromString(svg, "image/svg+xml").documentElement;
    const sheets = [...root.querySelectorAll("style")];
    const css = sheets.map((style) => style.textContent).join("\n");
    sheets.forEach((style) => style.remove());
    const styles = [];
    for (const node of [root, ...root.querySelectorAll("[style]")]) {
      if (!node.hasAttribute("style")) continue;
      node.setAttribute("data-style", String(styles.length));
      styles.push(node.getAttribute("style"));
      node.removeAttribute("style");
    }
    return { svg: new XMLSerializer().serializeToString(root), css, styles };
  }

  let drawn = 0;
  window.addEventListener("message", async (event) => {
    if (event.source !== window.parent) return;
    const { id, text, fontFamily } = event.data || {};
    if (typeof id !== "number" || typeof text !== "string") return;
    try {
      if (!ready) setUp(String(fontFamily || "sans-serif"));
      await window.mermaid.parse(text); // throws on text it cannot read: no error picture
      drawn += 1;
      const { svg } = await window.mermaid.render(`flow-graph-${drawn}`, text);
      window.parent.postMessage({ id, ...withoutInlineStyles(svg) }, "*");
    } catch (error) {
      window.parent.postMessage({ id, error: String((error && error.message) || error) }, "*");
    }
  });
  window.parent.postMessage({ ready: true }, "*");
})();
