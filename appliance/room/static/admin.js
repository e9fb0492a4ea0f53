// The admin pages' only script: "Copy link" buttons. The link is in a read-only field beside
// each button, so without this script it can still be selected and copied by hand.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = button.parentElement.querySelector(".copied");
  try {
    await navigator.clipboard.writeText(field.value);
    if (status) status.textContent = "Copied.";
  } catch {
    field.focus();
    field.select();
    if (status) status.textContent = "Selected: press Ctrl+C (or Cmd+C) to copy.";
  }
});
