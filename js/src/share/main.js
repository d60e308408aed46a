// Entry of the saved page (bundled into mri_widgets/static/share_host.js, inlined by save_html).
import { boot } from "./host.js";

const data = document.getElementById("mri-share-data");
const host = document.getElementById("mri-share-views");
if (data && host) {
  window.mriShare = boot(JSON.parse(data.textContent), host).then((m) => {
    document.body.setAttribute("data-mri-ready", "1");
    return m;
  });
}
