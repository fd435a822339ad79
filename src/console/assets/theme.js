// Applies the saved colour scheme (auto | dark | light) before the page paints; console.js owns the toggle.
(function () {
  try {
    var saved = localStorage.getItem("awooop-theme")
    if (saved === "dark" || saved === "light") document.documentElement.setAttribute("data-theme", saved)
  } catch (e) { /* storage disabled: follow prefers-color-scheme */ }
})()
