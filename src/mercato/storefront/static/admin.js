// Admin pages: ask before a form marked data-confirm (a delete) is sent. Without
// JavaScript the form is sent at once; its button says what it does.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});
