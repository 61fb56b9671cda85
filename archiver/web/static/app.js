// The only script: event timeline buttons jump the recording to that moment, and a
// recording this browser cannot play gives way to a visible note with its download link.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.seek");
  const video = document.getElementById("recording");
  if (!button || !video) return;
  event.preventDefault();
  video.currentTime = Number(button.dataset.seek);
  video.scrollIntoView({ block: "nearest" });
});

const recording = document.getElementById("recording");
const fallback = document.getElementById("recording-fallback");
if (recording && fallback) {
  const giveWay = () => {
    recording.hidden = true;
    fallback.hidden = false;
  };
  recording.addEventListener("error", giveWay);
  const type = recording.dataset.type;
  // The error may have come before this deferred script ran; an unknown type never loads.
  if (recording.error || recording.networkState === HTMLMediaElement.NETWORK_NO_SOURCE
      || (type.startsWith("video/") && recording.canPlayType(type) === "")) {
    giveWay();
  }
}
