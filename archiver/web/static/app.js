// The only script: event timeline buttons jump the recording to that moment.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.seek");
  const video = document.getElementById("recording");
  if (!button || !video) return;
  event.preventDefault();
  video.currentTime = Number(button.dataset.seek);
  video.scrollIntoView({ block: "nearest" });
});
